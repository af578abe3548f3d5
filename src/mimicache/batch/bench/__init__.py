"""The cache benchmark: the same jobs cold (forced refresh) and warm, compared per stage
(``cold_warm``), and the comparison as a chart (``plot``)."""
