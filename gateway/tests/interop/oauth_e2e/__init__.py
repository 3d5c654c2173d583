"""Helpers of test_oauth_e2e.py and of ops/scripts/oauth-e2e.sh (see stack.py)."""
