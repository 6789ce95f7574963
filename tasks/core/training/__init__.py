"""Stage 4, LoRA fine-tuning: resumable at any step, in one or several processes.

``run`` trains (or resumes) into an MLflow run and uploads the adapter; ``runs`` what a
training run is outside its process (the job, the result, finding the MLflow run again);
``setup`` what a process sets up first (precision, accelerator, model, tokenized splits);
``precision`` the compute precision and its reason (bf16 autocast on a GPU or a CPU with a
native bf16 unit), shared by training, evaluation and serving; ``int8_base`` the frozen base's
matmuls in int8 for training on x86 CPUs (``precision: int8``, opt-in);
``loop`` the training loop itself, step by step; ``launcher`` runs it in a child process (the training ``agent``, which
forks one rank per CPU process; ``accelerate launch`` across GPUs) and relays its progress;
``child`` that child's argv, environment and process layout, and the agent started early
(``forked`` from ``loraflow run`` once its imports are done, where that is safe); ``checkpoints`` the resumable
state on disk and in the run's artifacts; ``batches`` length-grouped, dynamically padded or
packed batches; ``passes`` where scoring cuts a length-sorted batch into forward passes
(evaluation and serving); ``sft`` prompt/response examples with the loss on the response; ``modeling``
builds base + LoRA models from references (also used by evaluation and serving); ``refs``
the references themselves, readable without torch; ``tokenizer`` a base's tokenizer without
PEFT (data validation counts tokens with it), built by its class where ``tokenizer_class``
reads AutoTokenizer's choice from the model's files (no torch);
``cpu_dropout`` a cheaper dropout for CPU; ``first_token`` a BERT-family classifier's last
layer computed past its attention for the one position its head reads; ``grad_sync`` one
gradient exchange per step for CPU process groups; ``generation`` batched, left-padded answers from a decoder + adapter (evaluation, the
registered generator, serving); ``progress`` step events, batched MLflow metrics, the terminal bar, the plot.
"""
