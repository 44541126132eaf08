"""What a study compares: its design factors (the design choices as tags), the nuisance
settings tuned per arm, and how a sweep's overrides expand into jobs. Pure config work: no
torch, no MLflow client."""
