"""slimserve runtime: sandboxes and the worker that runs inside each one."""
