"""Push: subscriptions from GCTI_* keys, notification bodies, the reliable-delivery rules."""
