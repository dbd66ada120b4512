"""The network-fault lab (scripts/network-faults) and the idle race (scripts/reliability)."""
