{#- A join of two sources and an aggregate; camelCase fields need double quotes, as in
    PostgreSQL. The table is rebuilt on every run. -#}
{{ sink(name="local_pg", table="demo.customer_totals", mode="replace") }}
SELECT
    c."customerId" AS customer_id,
    c."displayName" AS name,
    c.country,
    count(*) AS orders,
    CAST(sum(o.amount) AS DECIMAL(14, 2)) AS total_amount,
    max(o.created_at) AS last_order_at
FROM {{ use_source("orders") }} AS o
JOIN {{ use_source("customers") }} AS c ON o.customer_id = c."customerId"
GROUP BY c."customerId", c."displayName", c.country
