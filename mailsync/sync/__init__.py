"""The sync itself: planning a job, claiming and running chunks, writing pages, closing jobs."""
