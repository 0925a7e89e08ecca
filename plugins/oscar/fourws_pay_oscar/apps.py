from django.apps import AppConfig
from django.core.signals import setting_changed


def _settings_changed(setting: str, **kwargs: object) -> None:
    if setting in {"FOURWS_PAY", "SECRET_KEY", "BASE_DIR"}:
        from fourws_pay_oscar import provider

        provider.reset()


class FourWSPayOscarConfig(AppConfig):
    """Templates, management commands and settings hooks of the Oscar integration."""

    name = "fourws_pay_oscar"
    label = "fourws_pay_oscar"
    verbose_name = "4WS gift cards for Oscar"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from fourws_pay import protect_access_logs

        # The callback view's path carries each callback's secret: runserver's and
        # gunicorn's access logs, and django.request's 404 warnings, must not keep it.
        protect_access_logs()
        setting_changed.connect(_settings_changed, dispatch_uid="fourws_pay_oscar.settings")
        from django.core import checks

        from fourws_pay_oscar.checks import tenant_settings

        # refuse to run without the 4WS tenant (fourws_pay_oscar.E001), sandbox mode aside
        checks.register(tenant_settings)
        from django.db.models.signals import post_save
        from oscar.core.loading import get_model

        from fourws_pay_oscar import selling

        post_save.connect(
            selling.on_source_saved,
            sender=get_model("payment", "Source"),
            dispatch_uid="fourws_pay_oscar.selling",
        )
        post_save.connect(
            selling.on_basket_attribute_saved,
            sender=get_model("basket", "LineAttribute"),
            dispatch_uid="fourws_pay_oscar.selling.amount",
        )
