-- Orders and amount per region, from the table the previous step wrote.
SELECT region, COUNT(*) AS orders, SUM(amount) AS total
FROM `${gcp_project}.${typeof(dataset) === 'undefined' ? 'digdag_ha_sample' : dataset}.orders`
GROUP BY region
