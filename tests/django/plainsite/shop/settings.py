import os
import tempfile

SECRET_KEY = "plainsite-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "shop.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), "plainsite.sqlite3"),
    }
}

if os.environ.get("PLAINSITE_ZIBRATO") == "1":
    # The two lines of the setup guide, and where to publish (nobody listens there).
    INSTALLED_APPS += ["zibrato_django"]
    MIDDLEWARE = ["zibrato_django.middleware.ZibratoMiddleware", *MIDDLEWARE]
    ZIBRATO = {"PUBLISH": f"ipc://{tempfile.gettempdir()}/plainsite-none"}
