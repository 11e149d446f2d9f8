"""The OpenAI-compatible gateway: forwarding to upstreams with fallbacks and accounting (DESIGN.md, API)."""
