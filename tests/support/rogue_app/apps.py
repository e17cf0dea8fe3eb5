"""The mistake of the blog posts: a scheduler started in AppConfig.ready(), in every process."""

from apscheduler.schedulers.background import BackgroundScheduler
from django.apps import AppConfig


class RogueConfig(AppConfig):
    name = "tests.support.rogue_app"

    def ready(self) -> None:
        BackgroundScheduler().start()
