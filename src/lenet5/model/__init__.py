"""LeNet-5 from swappable blocks: one module per `conf/model/<group>/` (activation, pooling,
connectivity, head, loss, init, norm, dropout), the network that assembles them (`network`),
and the slots that say what each group's `_target_` must be (`slots`). The blocks are
independent of each other (checked by `lint-imports`)."""
