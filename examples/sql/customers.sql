{#- Every customer as the API serves it: no transform, so this runs at `apitap load` speed.
    The source has primary_key_in_dest, so reruns merge (upsert) on "customerId". -#}
{{ sink(name="local_pg") }}
SELECT * FROM {{ use_source("customers") }}
