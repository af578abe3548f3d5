"""Files and URLs, below the feature cache, the config and the media: atomic writes and file
locks (``files``), content digests (``digests``), object stores and create-only puts
(``objects``, with fsspec imported only for a URL), inputs fetched by URL (``fetch``), what a
store's failure means (``faults``), sizes for people (``sizes``) and JSON values
(``json_values``). It knows nothing of caches, models or videos.
"""
