"""State stores: where the hub keeps what must outlive one event (see base.Store)."""
