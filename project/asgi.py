"""ASGI entry point: Django views over HTTP, the chat over websockets.

Run with ``daphne project.asgi:application``.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Django must be set up before anything imports models or the consumers.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The sample serves its few static files itself (the page's script);
        # a production site would collect them and serve them from a web server.
        "http": ASGIStaticFilesHandler(django_asgi_app),
        # Browsers send Origin on every websocket handshake; a page served
        # from a host outside ALLOWED_HOSTS must not open a chat socket.
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
