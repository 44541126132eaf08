"""The MLflow side of a run: the store (`stores`), a run's lifecycle (`runs`), whether it
still runs (`liveness`), what it records (`runinfo`), the UI's saved view (`views`),
continuing it (`resume`), and a sweep's parent run (`parent`). Never imports torch."""
