"""Analysis tools over models and runs: compare strategies, rank backbones, explain predictions."""
