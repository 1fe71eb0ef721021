"""HTTP plumbing both services share: logging, request context, error envelope, SSE."""
