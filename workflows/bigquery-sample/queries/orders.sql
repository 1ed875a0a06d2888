-- The sample's source rows (4 orders, 280 in total).
SELECT region, amount
FROM UNNEST([
  STRUCT<region STRING, amount INT64>('tokyo', 120),
  ('osaka', 80),
  ('tokyo', 30),
  ('nagoya', 50)
])
