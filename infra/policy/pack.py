"""The policies of the UAE pack: the rules of ``infra/policy/rules.py``, mandatory.

``__main__.py`` serves them to the Pulumi engine; the tests call them directly."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy import rules

_DESCRIPTIONS = {
    "uae-region-only": "AWS resources in me-central-1, Azure resources in uaenorth/uaecentral",
    "encrypted-at-rest": "queues, topics, tables and storage accounts encrypted at rest",
    "no-public-storage": "no public bucket ACLs, blob containers or storage accounts",
    "no-wildcard-iam": "no IAM statement allowing * actions on * resources; no Owner/Contributor;"
    " no custom Azure role with * actions",
    "no-function-url-where-unsupported": "no Lambda Function URL where Lambda has none "
    "(me-central-1): serve through API Gateway",
}


def _resource_policy(name: str) -> ResourceValidationPolicy:
    rule = rules.RESOURCE_RULES[name]

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        provider = args.provider.props if args.provider is not None else None
        for message in rule(rules.Res(args.resource_type, args.name, args.props, provider)):
            report(message, None)

    return ResourceValidationPolicy(
        name=name,
        description=_DESCRIPTIONS[name],
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def _stack_policy(name: str, description: str, check: rules.StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [
            rules.Res(
                r.resource_type,
                r.name,
                r.props,
                r.provider.props if r.provider is not None else None,
            )
            for r in args.resources
        ]
        urns = {r.name: r.urn for r in args.resources}
        for v in check(resources):
            report(v.message, urns.get(v.resource))

    return StackValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def policies() -> list[Policy]:
    return [
        *(_resource_policy(name) for name in rules.RESOURCE_RULES),
        _stack_policy(
            "buckets-encrypted-and-private",
            "every bucket has default encryption and a complete public access block",
            rules.bucket_violations,
        ),
        _stack_policy(
            "lambda-failures-kept",
            "every Lambda has a dead-letter queue or an on-failure destination",
            rules.lambda_violations,
        ),
    ]
