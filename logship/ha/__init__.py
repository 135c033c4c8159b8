"""The HA agent and its etcd client (issue 16)."""
