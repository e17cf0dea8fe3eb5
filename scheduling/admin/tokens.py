"""API tokens: created here (the key is shown once, on the page after saving), listed, revoked."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from scheduling import tokens
from scheduling.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at"]
    list_select_related = ["user"]
    search_fields = ["name", "user__username", "prefix"]
    fields = ["user", "name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        found = super().get_queryset(request).select_related("user")
        # A token acts with its user's permissions: only a superuser may see or make them for others.
        return found if request.user.is_superuser else found.filter(user=request.user.pk)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        user: Any = request.user
        if db_field.name == "user":
            # A token of an inactive user would never work (tokens.user_for refuses it).
            users = get_user_model()._default_manager.filter(is_active=True)
            kwargs["queryset"] = users if user.is_superuser else users.filter(pk=user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A key cannot be shown or changed after it is created: revoke (delete) and create anew.
        return False

    def save_model(self, request: HttpRequest, obj: ApiToken, form: ModelForm, change: bool) -> None:
        tokens.issue(obj)

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        # The key is in this response only: it is not stored, and a message would keep it in a cookie.
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"API token “{obj.name}” created",
            "token": obj,
            "key": obj.key,
        }
        return TemplateResponse(request, "admin/scheduling/apitoken/created.html", context)
