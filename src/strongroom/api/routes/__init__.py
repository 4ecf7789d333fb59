"""One module per resource, each exporting `ENDPOINTS`; `ALL` is what the app serves, in document order."""

from strongroom.api.routes import accounts, audit, credentials, datastores, jobs, oauth, sharing, system

ALL = [
    *system.ENDPOINTS,
    *credentials.ENDPOINTS,
    *sharing.ENDPOINTS,
    *datastores.ENDPOINTS,
    *oauth.ENDPOINTS,
    *jobs.ENDPOINTS,
    *audit.ENDPOINTS,
    *accounts.ENDPOINTS,
]
