"""The production entry point: ``gunicorn 'intake.wsgi:app'``.

Unlike ``flask run``, it assumes production unless INTAKE_ENV says otherwise, so a server
started without its settings refuses to start instead of running on development defaults.
"""

import os

from intake import create_app

app = create_app({"ENV": os.environ.get("INTAKE_ENV") or "production"})
