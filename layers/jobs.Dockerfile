# The Dhow jobs image: the register and drift-check Lambdas (over the 250 MB zip limit:
# scikit-learn with pyarrow; evidently) and the validation processing job run it. Built and pushed by
# `pulumi up` (infra/aws/training.py) from the repository root as context.
FROM public.ecr.aws/lambda/python:3.12

# Dependencies first, so a code change reuses this layer: pyproject.toml's exact pins of
# the core, train and drift (tests/infra/test_layers.py keeps the file equal to them).
COPY layers/jobs-requirements.txt /tmp/jobs-requirements.txt
RUN pip install --no-cache-dir --only-binary=:all: -r /tmp/jobs-requirements.txt \
    && ln -sf /var/lang/bin/python3 /usr/local/bin/python

COPY shared ${LAMBDA_TASK_ROOT}/shared
COPY functions ${LAMBDA_TASK_ROOT}/functions

# Lambda: the function's image_config command names the handler. SageMaker Processing
# overrides the entrypoint with `python3 -m shared.jobs.validate`.
CMD ["functions.drift_check.aws_lambda.handler"]
