"""Node groups, node health, pinning and failover (CONTRACT §9)."""
