"""Who may do what, tried as an attacker: a principal of the account sending to the
stack's queues, a captured value written to run as script in the drift report, and one
stage's roles reaching another stage's jobs and models by their name prefix. Each attempt
is recorded with the answer it got ("denied" or "allowed"), then asserted."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase

from infra.aws.events import queue_policy, role_arns, sender_roles
from infra.config import check
from shared.cloud_facts import value
from shared.drift import compare
from tests.faults.ledger import Ledger
from tests.infra.harness import Program, run
from tests.infra.resource_policy import Request, may_send
from tests.infra.test_stage_prefixes import names

ACCOUNT = "123456789012"
REGION = "me-central-1"


def test_a_principal_of_the_account_cannot_send_to_any_queue(ledger: Ledger) -> None:
    cfg = check(stage="uae-prod", specs_dir="shared/specs")
    roles = sender_roles(cfg)
    intruder = f"arn:aws:iam::{ACCOUNT}:role/some-admin"
    names = [(q.logical, q.name) for q in cfg.topology.queues]
    names += [(f"{q.logical}-dlq", q.dlq_name) for q in cfg.topology.queues]
    names.append(("async-failures", f"{cfg.prefix}-async-failures"))
    answers = {}
    for key, name in names:
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        policy = json.loads(queue_policy(arn, [], role_arns(ACCOUNT, roles.get(key, []), cfg)))
        # The intruder's own policy allows sqs:SendMessage on every queue.
        sent = may_send(
            policy, Request("sqs:SendMessage", arn, role_arn=intruder), identity_allows=True
        )
        answers[name] = "allowed" if sent else "denied"
        ledger.answer(f"foreign sender to queue {name}", answers[name])
    assert set(answers.values()) == {"denied"}


def test_a_captured_value_cannot_run_as_script_in_the_report(ledger: Ledger) -> None:
    from shared.drift_report import content_security_policy, render_html
    from tests.unit.test_drift import categorical, kinds_of

    hostile = "</script><script>alert(1)</script>"
    ref, cur = categorical(300, 0, 0.0), categorical(300, 1, 0.0)
    for frame in (ref, cur):
        frame["emirate"] = frame["emirate"].astype(object)
        frame.loc[frame.index[:50], "emirate"] = hostile
    kinds = kinds_of(ref)
    page = render_html(ref, cur, kinds, compare(ref, cur, kinds), "customers", 300).decode()
    bodies = re.findall(r"<script>(.*?)</script>", page, re.S)
    runs = any(b.strip().startswith("alert(1)") for b in bodies)
    # And were the attacker's block in the page, would the page's CSP let it run?
    injected = content_security_policy("<script>alert(1)</script>").split("script-src ")[1]
    csp = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    csp_admits = not csp or injected.split(";")[0].replace("'", "&#x27;") in csp[0]
    answer = "allowed" if runs or csp_admits else "denied"
    ledger.answer("script in a captured value of the drift report", answer)
    assert answer == "denied"


def _patterns(program: Program) -> list[str]:
    """Every Resource of every policy document the stack writes (role policies, the S3
    gateway endpoint's, queue and bucket policies) that names something by a wildcard."""
    wildcards = value("aws.iam.arn_wildcards")
    out: list[str] = []
    for r in program.resources:
        for raw in r.inputs.values():
            if not (isinstance(raw, str) and '"Statement"' in raw):
                continue
            for st in json.loads(raw)["Statement"]:
                res = st.get("Resource", [])
                for arn in [res] if isinstance(res, str) else res:
                    if arn != "*" and (wildcards["any"] in arn or wildcards["one"] in arn):
                        out.append(arn)
    return out


def _rule_prefixes(program: Program) -> list[str]:
    """Every {"prefix": ...} of the stack's EventBridge rules."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if set(node) == {"prefix"}:
                found.append(str(node["prefix"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for rule in program.of_type("aws:cloudwatch/eventRule:EventRule"):
        walk(json.loads(rule.inputs["eventPattern"]))
    return found


def _their_arns(stage: str, program: Program) -> list[str]:
    """Another stage's resources: what its stack creates (every ARN the mocks recorded)
    and the jobs and models its code creates at run time, named as the adapters name
    them (tests/infra/test_stage_prefixes.py)."""
    n = names(stage)
    sm = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    made = [
        f"{sm}:training-job/{n['TrainingJobName']}",
        f"{sm}:processing-job/{n['ProcessingJobName']}",
        f"{sm}:model-package-group/{n['ModelPackageGroupName']}",
        f"{sm}:model-package/{n['ModelPackageGroupName']}/3",
        f"{sm}:model/{n['ModelName']}",
        f"{sm}:endpoint-config/{n['EndpointConfigName']}",
        f"{sm}:endpoint/{n['EndpointName']}",
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{n['FunctionName']}:live",
        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{n['AlarmName']}",
    ]
    recorded = {str(r.outputs["arn"]) for r in program.resources if r.outputs.get("arn")}
    buckets = [f"arn:aws:s3:::{r.inputs['bucket']}/datasets/x" for r in
               program.of_type("aws:s3/bucket:Bucket")]  # fmt: skip
    return made + sorted(recorded) + buckets


def test_one_stage_s_roles_reach_no_job_or_model_of_another(ledger: Ledger) -> None:
    """Two stages' whole AWS stacks under Pulumi's mocks, acme and acme-prod: no policy
    of one names by a wildcard (fact aws.iam.arn_wildcards) anything of the other, and no
    rule of one routes the other's job or deployment ends by its prefix."""
    programs = {
        stage: run(check(stage=stage, region=REGION, specs_dir="shared/specs"))
        for stage in ("acme", "acme-prod")
    }
    answers = []
    for mine, theirs in (("acme", "acme-prod"), ("acme-prod", "acme")):
        patterns = _patterns(programs[mine])
        assert any("training-job/" in p for p in patterns)  # the grants were read
        for arn in _their_arns(theirs, programs[theirs]):
            hit = [p for p in patterns if fnmatchcase(arn, p)]
            answer = "allowed" if hit else "denied"
            if hit or ":sagemaker:" in arn or ":function:" in arn:
                ledger.answer(f"stage {mine} role on {arn.split(':', 5)[-1]}", answer)
            answers.append(answer)
        prefixes = _rule_prefixes(programs[mine])
        assert prefixes  # the rules were read
        for kind in ("TrainingJobName", "ProcessingJobName", "EndpointName"):
            name = names(theirs)[kind]
            routed = any(name.startswith(p) for p in prefixes)
            answer = "allowed" if routed else "denied"
            ledger.answer(f"stage {mine} rule on {kind} {name}", answer)
            answers.append(answer)
    assert set(answers) == {"denied"}
