"""`distill export`: a run's data and its student in formats other tools load.

`dataset.py` writes the train/held-out splits (after the review gate) as a Hugging Face dataset
folder, Parquet, JSONL or OpenAI upload files; `card.py` writes the dataset card. `student.py`
merges a local LoRA student into its base and writes one GGUF (llama.cpp, Ollama, LM Studio)
with a Modelfile, or a transformers folder; `gguf_file.py` is the GGUF writing itself.
"""
