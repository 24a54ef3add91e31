"""Every environment variable Dhow reads, in one place.

An explicit argument always beats the environment: these names are only read by
``Settings.from_env``.
"""

CLOUD = "DHOW_CLOUD"
# Which registered cloud kit builds the ports (shared/clouds): the cloud's own when unset;
# the local platform sets local-aws or local-azure in every process it starts.
KIT = "DHOW_KIT"
STAGE = "DHOW_STAGE"
AWS_REGION = "AWS_REGION"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
# The account that owns the stack's buckets: every S3 call names it as the expected owner,
# so a bucket of the same name in another account (or region) is refused (set by the stack).
AWS_ACCOUNT_ID = "DHOW_AWS_ACCOUNT_ID"
AZURE_LOCATION = "DHOW_AZURE_LOCATION"
AWS_ENDPOINT_URL = "DHOW_AWS_ENDPOINT_URL"
# DynamoDB may sit at its own endpoint locally (see localstack/dhow_local/platform.py).
AWS_DYNAMODB_ENDPOINT_URL = "DHOW_AWS_DYNAMODB_ENDPOINT_URL"
# ... and so may SageMaker (LocalStack's free edition has none; moto serves its registry).
AWS_SAGEMAKER_ENDPOINT_URL = "DHOW_AWS_SAGEMAKER_ENDPOINT_URL"
TRAINING_IMAGE_URI = "DHOW_TRAINING_IMAGE_URI"
AZURE_STORAGE_CONNECTION_STRING = "DHOW_AZURE_STORAGE_CONNECTION_STRING"
# The pipeline topic's endpoint; the Azure kit refuses to start without it (only the
# local kit, which plays Event Grid, needs none).
AZURE_EVENTGRID_ENDPOINT = "DHOW_AZURE_EVENTGRID_ENDPOINT"
# The data account, reached with the function app's managed identity (no keys).
AZURE_STORAGE_ACCOUNT = "DHOW_AZURE_STORAGE_ACCOUNT"
MAX_UPLOAD_BYTES = "DHOW_MAX_UPLOAD_BYTES"
INGEST_CLAIM_SECONDS = "DHOW_INGEST_CLAIM_SECONDS"

# The only places a Dhow stack may run. Everything else is refused at start-up.
AWS_REGIONS_ALLOWED = ("me-central-1",)
AZURE_LOCATIONS_ALLOWED = ("uaenorth", "uaecentral")

# Default size limit for one upload: 5 GiB, the largest object S3 accepts in a
# single PUT and CopyObject, so the ingest copy never needs multipart logic.
DEFAULT_MAX_UPLOAD_BYTES = 5 * 1024**3

# Source name of the pipeline's own events on the event bus.
EVENT_SOURCE = "dhow.pipeline"

# The detail-types of the AWS events the pipeline subscribes to: the topology's rules
# match them and the trigger shapes (shared/triggers/aws.py) claim them.
TRAINING_JOB_STATE_CHANGE = "SageMaker Training Job State Change"
PROCESSING_JOB_STATE_CHANGE = "SageMaker Processing Job State Change"
CODEDEPLOY_STATE_CHANGE = "CodeDeploy Deployment State-change Notification"
ENDPOINT_STATE_CHANGE = "SageMaker Endpoint State Change"

# Where dataset specs are read from (default: the specs shipped in shared/specs/).
SPECS_DIR = "DHOW_SPECS_DIR"
# Files above this size are validated by a managed job instead of the function.
VALIDATE_INLINE_MAX_BYTES = "DHOW_VALIDATE_INLINE_MAX_BYTES"
# 2 GiB: validate's /tmp is sized for it (shared.topology.validate_tmp_mb).
DEFAULT_VALIDATE_INLINE_MAX_BYTES = 2 * 1024**3
# Deploy-time facts of the managed validation job (set by the stack; absent locally).
PROCESSING_IMAGE_URI = "DHOW_PROCESSING_IMAGE_URI"
SAGEMAKER_ROLE_ARN = "DHOW_SAGEMAKER_ROLE_ARN"
KMS_KEY_ID = "DHOW_KMS_KEY_ID"
PRIVATE_SUBNETS = "DHOW_PRIVATE_SUBNETS"  # comma-separated
SECURITY_GROUPS = "DHOW_SECURITY_GROUPS"  # comma-separated
# The Azure ML workspace that runs handed-off validation (set by the stack).
AZUREML_SUBSCRIPTION_ID = "DHOW_AZUREML_SUBSCRIPTION_ID"
AZUREML_RESOURCE_GROUP = "DHOW_AZUREML_RESOURCE_GROUP"
AZUREML_WORKSPACE = "DHOW_AZUREML_WORKSPACE"
AZUREML_COMPUTE = "DHOW_AZUREML_COMPUTE"
AZUREML_ENVIRONMENT = "DHOW_AZUREML_ENVIRONMENT"
AZUREML_STAGING_DATASTORE = "DHOW_AZUREML_STAGING_DATASTORE"
AZUREML_GPU_COMPUTE = "DHOW_AZUREML_GPU_COMPUTE"
AZUREML_TRAIN_ENVIRONMENT = "DHOW_AZUREML_TRAIN_ENVIRONMENT"
AZUREML_CURATED_DATASTORE = "DHOW_AZUREML_CURATED_DATASTORE"
AZUREML_MODELS_DATASTORE = "DHOW_AZUREML_MODELS_DATASTORE"
# What deploy's online deployments run on (infra/azure/serving.py; Pulumi config
# dhow:azureServingInstanceType).
AZUREML_SERVE_ENVIRONMENT = "DHOW_AZUREML_SERVE_ENVIRONMENT"
AZUREML_SERVING_INSTANCE_TYPE = "DHOW_AZUREML_SERVING_INSTANCE_TYPE"
# Rows per validation chunk: bounds the function's memory whatever the file size.
VALIDATE_CHUNK_ROWS = "DHOW_VALIDATE_CHUNK_ROWS"
# Serving. The serve function of one dataset, and the model version it serves (set on
# each published Lambda version by the deploy function; the champion when unset).
SERVE_DATASET = "DHOW_SERVE_DATASET"
SERVE_MODEL_VERSION = "DHOW_SERVE_MODEL_VERSION"
# Set by Lambda itself (reserved, never by the stack): the serve app's per-request metrics
# carry the executing version, so the canary's alarms judge the candidate alone.
LAMBDA_FUNCTION_NAME = "AWS_LAMBDA_FUNCTION_NAME"
LAMBDA_FUNCTION_VERSION = "AWS_LAMBDA_FUNCTION_VERSION"
# The drift check's alerts go to this SNS topic (the stack sets it).
ALERTS_TOPIC_ARN = "DHOW_ALERTS_TOPIC_ARN"
# The SageMaker inference image for endpoint serving (set by the stack).
INFERENCE_IMAGE_URI = "DHOW_INFERENCE_IMAGE_URI"
# The local router's clock: how many seconds a deployment-schedule minute lasts locally.
LOCAL_MINUTE_SECONDS = "DHOW_LOCAL_MINUTE_SECONDS"
# The local router's port (the platform's own; Azure's local deployer reads its counts).
ROUTER_PORT = "DHOW_ROUTER_PORT"

# A dataset's name as an upload's key names it (datasets/<dataset>/...): what ingest
# accepts, and so all a message naming a dataset may hold before a store is queried by it.
DATASET_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
