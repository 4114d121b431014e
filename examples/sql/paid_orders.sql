{#- A filter, renames and casts: paid or shipped orders with an amount, merged on id. -#}
{{ sink(name="local_pg", table="demo.paid_orders", mode="merge", key="id") }}
SELECT
    id,
    customer_id,
    CAST(amount AS DECIMAL(12, 2)) AS amount_eur,
    quantity,
    status,
    created_at,
    CAST(created_at AS DATE) AS order_date
FROM {{ use_source("orders") }}
WHERE status IN ('paid', 'shipped') AND amount IS NOT NULL
