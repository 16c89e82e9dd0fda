"""Node groups, node health, pinning and failover (docs/push.md)."""
