"""Stage 3, data validation: load, map, check, fingerprint and save both splits.

``prepare`` the stage (map columns and labels, run the checks, fingerprint, save the prepared
``DatasetDict``); ``loading`` reads a split through ``datasets`` and maps its texts and labels;
``checks`` one function per check, each a ``CheckResult`` with figure, threshold and rows;
``report`` the results and the report they make; ``pii`` finds (and redacts) personal data and
secrets; ``token_lengths`` what truncation with the audited model's tokenizer will cut off;
``preprocess`` what every text goes through before a model sees it (recorded with the
registered model and applied again at serving); ``sampling`` splits one file into train and
eval, drops repeats and draws stratified subsets; ``chat`` turns generative rows into
conversations and renders them with the tokenizer's chat template; ``sft`` prepares and checks
generative (prompt/response or chat) data.
"""
