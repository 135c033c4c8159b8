"""The operator's surface both daemons share: admin HTTP (/status, /metrics), the local control
channel (a unix socket), and readable tables for the status commands."""
