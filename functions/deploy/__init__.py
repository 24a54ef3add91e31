"""deploy: ModelApproved starts a rollout; the platform's end-of-deployment event finishes it."""
