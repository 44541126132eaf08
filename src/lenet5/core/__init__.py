"""The ground floor: errors, paths, names, Hydra helpers and process scopes that every other
layer shares. Imports neither torch nor MLflow (checked by `lint-imports`)."""
