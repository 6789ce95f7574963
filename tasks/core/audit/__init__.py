"""Stage 2, the audit: may this model be fine-tuned and shipped, with this data?

``licenses`` the pure license decision over the model's and the data's licenses (allow,
review with an approval, deny); ``supply_chain`` what loading the repo would execute and what
it leaks (pickles, remote code, weight integrity, secrets); ``refusal`` the MLflow record of a
refusal (one FAILED run holding the whole verdict).
"""
