"""slimserve gateway: HTTP, routing, pools, policy, metering and state."""
