"""collm: CoLLM (collaborative embeddings in a language model) as a scheduled Spark batch job."""
__version__ = "0.1.0"
