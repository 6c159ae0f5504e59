"""``objsearch serve``: the HTTP API and the search page over a live index (``app.create_app``)."""
