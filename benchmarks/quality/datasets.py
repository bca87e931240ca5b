"""Readers for the public datasets in ../shared/data (read in place, never copied).

Only the standard library and numpy: MovieLens 100K `u.data`/`u.item` and the gzip CSV form
of UCI Online Retail (see /work/shared/data/README.md for the formats).
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

MOVIELENS_DIR = "ml-100k"
RETAIL_FILE = "online-retail/online_retail.csv.gz"
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# Products have five digits plus an optional variant letter (85123A); POST, DOT, M, BANK
# CHARGES, gift_0001_20, DCGS... are postage, fees, vouchers and manual adjustments.
PRODUCT_CODE = re.compile(r"^\d{5}[A-Za-z]*$")


@dataclass(frozen=True)
class Ratings:
    """MovieLens: one row per rating; every rating counts as a positive interaction."""

    users: np.ndarray  # int64 user id
    items: np.ndarray  # int64 movie id
    timestamps: np.ndarray  # float64 unix seconds
    item_ids: np.ndarray  # int64: every movie in u.item (the catalog), sorted
    titles: dict[int, str]
    genres: dict[int, list[str]]

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask: np.ndarray) -> Ratings:
        return Ratings(self.users[mask], self.items[mask], self.timestamps[mask], self.item_ids, self.titles,
                       self.genres)

    def rated_catalog(self) -> Ratings:
        """The same ratings with the catalog cut to the movies they rate (a slice's own catalog)."""
        return Ratings(self.users, self.items, self.timestamps, np.unique(self.items), self.titles, self.genres)


@dataclass(frozen=True)
class RetailLines:
    """Online Retail sales lines in file order (which is the order within an invoice)."""

    invoices: np.ndarray  # object (str) InvoiceNo
    items: np.ndarray  # object (str) StockCode, upper-cased
    timestamps: np.ndarray  # float64 unix seconds (InvoiceDate taken as UTC)
    prices: np.ndarray  # float64 UnitPrice
    quantities: np.ndarray  # float64
    customers: np.ndarray  # object (str) CustomerID, or "guest-<InvoiceNo>" when missing
    titles: dict[str, str]  # StockCode -> first non-empty Description

    def __len__(self) -> int:
        return len(self.invoices)

    def subset(self, mask: np.ndarray) -> RetailLines:
        return RetailLines(self.invoices[mask], self.items[mask], self.timestamps[mask], self.prices[mask],
                           self.quantities[mask], self.customers[mask], self.titles)


def load_movielens(data_dir: Path) -> Ratings:
    root = data_dir / MOVIELENS_DIR
    raw = np.loadtxt(root / "u.data", dtype=np.int64)
    titles: dict[int, str] = {}
    genres: dict[int, list[str]] = {}
    with open(root / "u.item", encoding="latin-1") as fh:  # u.item is Latin-1, not UTF-8
        for line in fh:
            fields = line.rstrip("\n").split("|")
            movie = int(fields[0])
            titles[movie] = fields[1]
            genres[movie] = [name for name, flag in zip(GENRES, fields[5:24]) if flag == "1"]
    return Ratings(
        users=raw[:, 0],
        items=raw[:, 1],
        timestamps=raw[:, 3].astype(np.float64),
        item_ids=np.array(sorted(titles), dtype=np.int64),
        titles=titles,
        genres=genres,
    )


def load_online_retail(data_dir: Path) -> RetailLines:
    """Sales lines only: no C (cancelled) or A (bad debt) invoices, Quantity > 0, product
    StockCodes, UnitPrice > 0 (price-0 lines are stock notes such as "damaged" or "check")."""
    invoices: list[str] = []
    items: list[str] = []
    stamps: list[float] = []
    prices: list[float] = []
    quantities: list[float] = []
    customers: list[str] = []
    titles: dict[str, str] = {}
    parsed: dict[str, float] = {}  # InvoiceDate strings repeat once per line of an invoice
    with gzip.open(data_dir / RETAIL_FILE, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)  # InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
        for invoice, code, description, quantity, when, price, customer, _ in reader:
            if invoice[0] in "CA" or not PRODUCT_CODE.match(code):
                continue
            amount, unit_price = float(quantity), float(price)
            if amount <= 0 or unit_price <= 0:
                continue
            stamp = parsed.get(when)
            if stamp is None:
                stamp = parsed[when] = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
            item = code.upper()
            invoices.append(invoice)
            items.append(item)
            stamps.append(stamp)
            prices.append(unit_price)
            quantities.append(amount)
            customers.append(customer or f"guest-{invoice}")
            if description and item not in titles:
                titles[item] = description.strip()
    return RetailLines(
        invoices=_objects(invoices),
        items=_objects(items),
        timestamps=np.asarray(stamps, dtype=np.float64),
        prices=np.asarray(prices, dtype=np.float64),
        quantities=np.asarray(quantities, dtype=np.float64),
        customers=_objects(customers),
        titles=titles,
    )


def unix(day: str) -> float:
    """'2011-11-01' -> unix seconds at 00:00 UTC."""
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()


def _objects(values: list[str]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
