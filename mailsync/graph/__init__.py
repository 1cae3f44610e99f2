"""Microsoft Graph: the HTTP client, auth, delta paging, folders, Graph's limits, discovery."""
