"""Training: fitting one model with a checkpoint per epoch (fit), the distribution strategy (strategy), TensorBoard and MLflow (tracking)."""
