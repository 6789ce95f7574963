"""Where models come from: one catalog interface over the Hub and over the local mirror.

``base`` the interface (``Catalog``, ``Candidate``, ``CatalogQuery``), what a snapshot's files
tell (card, config, safetensors headers); ``choose`` which backend answers (mirror offline,
Hub online); ``mirror`` the local mirror,
a standard Hugging Face cache that ``loraflow hub import`` fills and that is read back with
huggingface_hub's own cache layout; ``hub`` the Hub backend (``HfApi``); ``license_ids`` the
Hub's license tags normalised to SPDX ids and their class; ``scratch`` builds the small random
decoder the offline generative example mirrors (no pretrained causal LM installs here);
``heads`` which model types transformers has a head for, per task, from a snapshot of the
installed version (discovery's check without importing transformers).
"""
