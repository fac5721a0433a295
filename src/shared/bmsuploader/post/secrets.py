"""Every destination's secrets: SecureStrings under its SSM path, read through Powertools' cache.

One parameter per value (``<path>/<name>``), so a rotated value is picked up
within ``max_age`` seconds without a cold start, and the function's IAM policy
can name the paths. No error message or repr ever contains a secret value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import BotoCoreError, ClientError

from bmsuploader.contract.errors import AuthError, ConfigError, TransientPublishError


def load_secrets(
    parameter_path: str, names: Sequence[str], *, network: str, hint: str, max_age: int = 300
) -> dict[str, str]:
    """Read the SecureStrings ``<parameter_path>/<name>`` for each name.

    A missing or empty parameter raises :class:`AuthError` naming the parameter
    and the command that creates it (``hint`` says where the value comes from);
    an SSM outage is a :class:`TransientPublishError`. Values are stripped: a
    value pasted with a trailing newline would otherwise break a signature.
    """
    path = parameter_path.rstrip("/")
    if not path.startswith("/"):
        raise ConfigError(
            f"{network} parameter path {parameter_path!r} must start with '/', "
            f"e.g. /bmsuploader/{network.lower()}"
        )
    full_names = {name: f"{path}/{name}" for name in names}
    try:
        # get_parameters_by_name returns a dict keyed by name: no reliance on the
        # order GetParameters happens to answer in.
        found = cast(
            "dict[str, Any]",
            parameters.get_parameters_by_name(
                {full: {} for full in full_names.values()},
                decrypt=True,
                max_age=max_age,
                raise_on_error=False,
            ),
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
            raise AuthError(
                f"cannot read {network} credentials under {path}: {code}; give the function "
                f"ssm:GetParameters on {path}/* and kms:Decrypt for the parameters' key"
            ) from exc
        raise TransientPublishError(
            f"reading {network} credentials under {path} failed: {code or exc}"
        ) from exc
    except (BotoCoreError, GetParameterError) as exc:
        raise TransientPublishError(f"reading {network} credentials under {path} failed: {exc}") from exc

    missing = [full for full in full_names.values() if not isinstance(found.get(full), str)]
    missing += [full for full in full_names.values() if full not in missing and not found[full].strip()]
    if missing:
        raise AuthError(
            f"{network} credentials missing or empty in SSM Parameter Store: {', '.join(missing)}. "
            f"Create each as a SecureString: aws ssm put-parameter --name {missing[0]} "
            f"--type SecureString --value '<{hint}>' --overwrite"
        )
    return {name: found[full].strip() for name, full in full_names.items()}
