"""Training one configuration: the LightningModule (`module`), the paper's optimizer
(`sdlm`), callbacks, how data is served per step (`chunks`), the checks that refuse a config
(`validate`), and building and fitting the parts (`build`). Never imports MLflow."""
