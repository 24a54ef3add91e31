"""`pulumi up --policy-pack infra/policy`: serve the UAE pack to the Pulumi engine."""

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policy.pack import policies

PolicyPack(name="dhow-uae", enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
