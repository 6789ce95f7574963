"""Stage 5, evaluate and gate: score candidate, champion and base; decide by pure code.

``scoring`` scores the models on one eval split (metrics, slices, golden cases), batched by
token length at the chosen precision; ``base_cache`` keeps the base model's scores per base,
eval data and max_length, so they are computed once; ``run_cache`` keeps a candidate's
scores for the evaluations where it is the champion; ``report`` the
plain records of what was measured; ``gates`` the registration gate, a pure decision over a
report and the configured gates; ``causal`` causal-LM scoring (loss, perplexity, a task
metric); ``golden`` reads and checks the must-pass examples (also before training);
``generation`` scores generators (exact match, ROUGE-L, format, refusals,
perplexity, golden prompts, worst answers); ``progress`` shows scoring progress; ``metrics/`` the project's metrics as local ``evaluate`` modules, loaded by path.
"""
