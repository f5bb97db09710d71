"""The scoring core: prompts, batching, attention, the model, training and inference. Pure torch and
transformers: nothing here imports pyspark, yaml or a module outside collm_udf.core (GPU machines have no JVM;
tests/test_layers.py enforces it)."""
