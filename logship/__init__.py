"""What both daemons share that is not the wire protocol: config parsing, TLS, crash-safe files,
task helpers, CLI plumbing and the operator's surfaces (control socket, HTTP, tables)."""
