"""``fer-serve``: a web page and a JSON API for emotion recognition (FastAPI on uvicorn).

``fer_lightning.serve.app`` builds the app (``create_app``) and runs it (``main``); ``static/`` holds the page;
``fer_lightning.serve.browser`` drives it in a real browser (the tests and the README screenshot).
"""
