"""Training: DL4J-faithful (`dl4j`) and standard PyTorch (`pytorch`) semantics, checkpoints, evaluation."""
