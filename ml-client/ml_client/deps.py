"""Everything a web client route needs from outside reaches it through these dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from ml_client.api import DetectionApi
from ml_client.auth import LoginLimiter, check_csrf, require_user
from ml_client.history import Originals, TaskHistory
from ml_client.settings import ClientSettings
from ml_client.users import UserStore


def get_settings_dep(request: Request) -> ClientSettings:
    settings: ClientSettings = request.app.state.settings
    return settings


def get_api(request: Request, user: Annotated[str, Depends(require_user)]) -> DetectionApi:
    """The API as the signed-in user: their own identity toward it."""
    return DetectionApi(request.app.state.api_http, user)


def get_history(request: Request) -> TaskHistory:
    history: TaskHistory = request.app.state.history
    return history


def get_originals(request: Request) -> Originals:
    originals: Originals = request.app.state.originals
    return originals


def get_limiter(request: Request) -> LoginLimiter:
    limiter: LoginLimiter = request.app.state.limiter
    return limiter


def get_users(request: Request) -> UserStore:
    users: UserStore = request.app.state.users
    return users


def get_templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


SettingsDep = Annotated[ClientSettings, Depends(get_settings_dep)]
ApiDep = Annotated[DetectionApi, Depends(get_api)]
HistoryDep = Annotated[TaskHistory, Depends(get_history)]
OriginalsDep = Annotated[Originals, Depends(get_originals)]
LimiterDep = Annotated[LoginLimiter, Depends(get_limiter)]
UsersDep = Annotated[UserStore, Depends(get_users)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]
UserDep = Annotated[str, Depends(require_user)]
CsrfDep = Depends(check_csrf)
SignedIn = Depends(require_user)  # listed before CsrfDep: signed out is 401, not 403
