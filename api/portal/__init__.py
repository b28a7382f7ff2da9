"""The tenant portal: one static page (vanilla JS, no CDN) over the tenant API."""
